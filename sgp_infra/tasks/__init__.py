"""ASYNC endpoints at run time: the JetStream client, the forwarder and local NATS (docs/async.md).

Names and limits of every JetStream object come from
:func:`sgp_infra.plan.nats.task_layout`; the API's task routes live in
:mod:`sgp_infra.api.tasks`.
"""
