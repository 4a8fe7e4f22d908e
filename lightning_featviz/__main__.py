import sys

from lightning_featviz.cli import main

sys.exit(main())
