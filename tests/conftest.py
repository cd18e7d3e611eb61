"""The test process plays one Lambda execution environment: like Lambda, it has the
functions' static environment before any relay module is imported (Powertools reads the
service name and metrics namespace when the module-level Logger and Metrics are built)."""

import os

from relay_local.stack import load_template

_GLOBALS = load_template()["Globals"]["Function"]["Environment"]["Variables"]
os.environ.setdefault("POWERTOOLS_SERVICE_NAME", _GLOBALS["POWERTOOLS_SERVICE_NAME"])
os.environ.setdefault(
    "POWERTOOLS_METRICS_NAMESPACE", load_template()["Parameters"]["MetricsNamespace"]["Default"]
)
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
