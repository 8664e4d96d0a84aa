import sys

from sensorium.cli import main

sys.exit(main())
