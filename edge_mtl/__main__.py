import sys

from edge_mtl.cli import main

sys.exit(main())
