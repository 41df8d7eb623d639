"""The plugin: rrjobs finds it through the ``rrjobs.drivers`` entry point.

This is RoadRunner's tutorial ``Plugin`` in Python: a
:class:`~rrjobs.core.interfaces.Constructor` that builds one
:class:`~my_awesome_driver.driver.Driver` per pipeline. It never starts
consuming: the runtime calls ``run`` for the pipelines in ``jobs.consume``,
and ``resume`` starts a declared pipeline.
"""

from __future__ import annotations

from my_awesome_driver import driver
from my_awesome_driver.config import Settings
from rrjobs.core.interfaces import Configurer, Constructor
from rrjobs.core.pipeline import Pipeline
from rrjobs.core.queue import PriorityQueue

PLUGIN_NAME = "my_awesome_driver"


class Plugin(Constructor):
    """Builds ``my_awesome_driver`` drivers.

    Created once per runtime with the configuration. The optional global
    section ``my_awesome_driver:`` is read here, once (RoadRunner's tutorial
    reads ``your_global_section`` the same way); a bad value in it fails the
    start with its key path.
    """

    name = PLUGIN_NAME

    def __init__(self, configurer: Configurer) -> None:
        super().__init__(configurer)
        self.settings = configurer.unmarshal_key(PLUGIN_NAME, Settings)

    async def driver_from_config(self, config_key: str, queue: PriorityQueue,
                                 pipeline: Pipeline) -> driver.Driver:
        return await driver.from_config(config_key, self.configurer, self.settings,
                                        pipeline, queue)

    async def driver_from_pipeline(self, pipeline: Pipeline,
                                   queue: PriorityQueue) -> driver.Driver:
        return await driver.from_pipeline(pipeline, self.settings, queue)
