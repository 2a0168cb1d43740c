import sys

from taskgate_client.cli.main import main

sys.exit(main())
