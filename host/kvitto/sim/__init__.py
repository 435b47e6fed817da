"""Virtual boards and the demo: the real firmware under the unix port, no hardware.

A board (`board`: its flash image and its unix-port process), several boards and the `kvitto
sim` shell (`fleet`), network cuts between a board and the broker (`netproxy`), and `kvitto
demo` (`demo`, `scene`: a day of home care end to end). The top of the house: imports any
package below it; only the CLI and tests import it.
"""
