"""The ``sqs`` driver (Amazon SQS, on aiobotocore): see :mod:`rrjobs.drivers.sqs.driver`.

Importing this package imports aiobotocore; ``import rrjobs`` does not (the
driver loads through its ``rrjobs.drivers`` entry point when a pipeline uses it).
"""

from rrjobs.drivers.sqs.config import SQSOptions, SQSSection
from rrjobs.drivers.sqs.driver import SQSConstructor, SQSDriver, SQSError, capabilities_for
from rrjobs.drivers.sqs.job import SQSJob

__all__ = ["SQSConstructor", "SQSDriver", "SQSError", "SQSJob", "SQSOptions", "SQSSection",
           "capabilities_for"]
