import sys

from spectralens.cli import main

sys.exit(main())
