"""Simulated peripherals for the unix port; never part of a board image (DESIGN.md, Layout).

    from sim.flash import mount
    bdev = mount("/tmp/board.img", "/flash")
    print(bdev.erases_total)
"""
