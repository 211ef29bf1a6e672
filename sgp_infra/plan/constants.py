"""Numbers and names shared by the planned objects and by other parts of sgp-infra."""

#: Launch's convention: model servers listen on 5005.
MODEL_PORT = 5005
MODEL_PORT_NAME = "http"
#: The model Services listen on plain HTTP port 80.
SERVICE_PORT = 80
#: The gauge the API exports per model; KEDA sums it across API replicas.
IN_FLIGHT_METRIC = "sgp_infra_model_requests_in_flight"
#: The PriorityClass high_priority models run under.
HIGH_PRIORITY_CLASS = "sgp-infra-high-priority"
HIGH_PRIORITY_VALUE = 1_000_000
#: The NetworkPolicy admitting only API pods to model pods.
MODEL_NETWORK_POLICY = "sgp-infra-models"
#: Seconds the model container gets to finish in-flight requests on shutdown.
TERMINATION_GRACE_SECONDS = 60
#: Floor of the startup probe's budget: loading weights takes minutes.
MIN_STARTUP_BUDGET_SECONDS = 1800
#: Margin ``pulumi up`` waits beyond the readiness delay before giving up.
ROLLOUT_MARGIN_SECONDS = 600
