"""The ``sqs`` driver (Amazon SQS, on aiobotocore): see :mod:`rrjobs.drivers.sqs.driver`.

Importing this package imports aiobotocore; ``import rrjobs`` does not (the
driver loads through its ``rrjobs.drivers`` entry point when a pipeline uses it).
"""

from rrjobs.drivers.sqs.config import SQSOptions, SQSSection
from rrjobs.drivers.sqs.driver import SQSConstructor, SQSDriver, SQSError, capabilities_for

__all__ = ["SQSConstructor", "SQSDriver", "SQSError", "SQSOptions", "SQSSection",
           "capabilities_for"]
