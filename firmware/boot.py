# boot.py: runs first on every start. Kept minimal: a fault here would stop the board before the
# watchdog and the error display exist. The application starts from main.py.
