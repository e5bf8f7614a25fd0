import sys

from sandwatch.cli.main import main

sys.exit(main())
