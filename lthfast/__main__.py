import sys

from lthfast.cli import main

sys.exit(main())
