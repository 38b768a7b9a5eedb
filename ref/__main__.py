import sys

from ref.cli import main

sys.exit(main())
