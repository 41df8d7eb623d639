"""The ``beanstalk`` driver: RoadRunner's Beanstalk pipelines on beanstalkd (options and
capabilities: ``docs/drivers/beanstalk.md``). Its client is :mod:`.protocol`, a small
asyncio implementation of beanstalkd's text protocol (no third-party client)."""

from rrjobs.drivers.beanstalk.driver import BeanstalkConstructor, BeanstalkDriver

__all__ = ["BeanstalkConstructor", "BeanstalkDriver"]
