"""One phase's fit: building the net, checking inputs and outputs, guards."""
