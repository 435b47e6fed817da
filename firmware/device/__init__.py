"""The kvitto device package: one module per concern (see DESIGN.md, Layout).

    import device
    print(device.VERSION)
"""

VERSION = "0.1.0"
WIRE_FORMAT = 1
