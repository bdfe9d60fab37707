//! The standard gRPC health service (`grpc.health.v1.Health`, from tonic-health) served
//! beside `stampede.v1.Coordinator` on the agents' endpoint, so a container HEALTHCHECK
//! (`stampede health`, [`crate::health`]) or a Kubernetes `grpc` probe can ask whether the
//! coordinator is up.
//!
//! It answers without the bearer token, on purpose: Kubernetes gRPC probes send no metadata,
//! and a health answer reveals only "serving", which anyone who can open the port already
//! learns. It controls nothing; every call that does (`Attach`, `Clock`) still needs the
//! token, and a probe's connection stays *pending* in the admission gate
//! ([`crate::admission`]), so probes count against its bounds like any other stranger.

use stampede_proto::pb::coordinator_server::SERVICE_NAME;
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::server::{HealthReporter, health_reporter};

/// The health service with the server ("") and `stampede.v1.Coordinator` serving, and the
/// reporter that can change that.
pub async fn server() -> (HealthReporter, HealthServer<impl Health>) {
    let (reporter, server) = health_reporter();
    reporter
        .set_service_status(SERVICE_NAME, ServingStatus::Serving)
        .await;
    (reporter, server)
}
