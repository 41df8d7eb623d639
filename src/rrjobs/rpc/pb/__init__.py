"""RoadRunner's ``jobs.v1`` protobuf messages, generated from ``jobs.proto`` (``make proto``)."""
