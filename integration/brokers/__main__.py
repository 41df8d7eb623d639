"""``python -m integration.brokers up|status|env|down [names...]``."""

from .cli import main

raise SystemExit(main())
