//! A set of Envoy v3 resources: the one form every configuration source produces.
//!
//! Also converts them to and from Envoy's canonical JSON mapping (what Envoy prints in
//! `/config_dump` and reads from YAML files) using a descriptor set compiled from the
//! `.proto` files shipped with `envoy-types` (see `build.rs`).

use std::sync::LazyLock;

use envoy_types::pb::envoy::admin::v3 as admin;
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::google::protobuf::Any;
use prost::{Message, Name};
use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};

/// Envoy v3 resources, by type, in configuration order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Resources {
    /// LDS resources.
    pub listeners: Vec<Listener>,
    /// RDS resources (listeners may also carry theirs inline).
    pub route_configs: Vec<RouteConfiguration>,
    /// CDS resources.
    pub clusters: Vec<Cluster>,
    /// EDS resources, for clusters of type `EDS`.
    pub load_assignments: Vec<ClusterLoadAssignment>,
}

static DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/envoy_descriptors.bin"));

/// The descriptor pool of Envoy's protos, decoded on first use.
pub fn descriptor_pool() -> Result<&'static DescriptorPool, String> {
    static POOL: LazyLock<Result<DescriptorPool, String>> = LazyLock::new(|| {
        DescriptorPool::decode(DESCRIPTORS).map_err(|e| format!("envoy descriptors: {e}"))
    });
    POOL.as_ref().map_err(Clone::clone)
}

/// Packs a message into `Any`.
pub fn pack<T: Message + Name>(msg: &T) -> Any {
    Any {
        type_url: T::type_url(),
        value: msg.encode_to_vec(),
    }
}

/// Renders any Envoy message as Envoy's canonical JSON (`Any` values expanded with
/// their `@type`).
pub fn to_json<T: Message + Name>(msg: &T) -> Result<serde_json::Value, String> {
    let pool = descriptor_pool()?;
    let desc = pool
        .get_message_by_name(&T::full_name())
        .ok_or_else(|| format!("no descriptor for {}", T::full_name()))?;
    let dynamic = DynamicMessage::decode(desc, msg.encode_to_vec().as_slice())
        .map_err(|e| format!("re-decoding {}: {e}", T::full_name()))?;
    let options = SerializeOptions::new()
        .skip_default_fields(true)
        .use_proto_field_name(true);
    dynamic
        .serialize_with_options(serde_json::value::Serializer, &options)
        .map_err(|e| format!("serializing {}: {e}", T::full_name()))
}

impl Resources {
    /// The resources as an Envoy `ConfigDump` in canonical JSON, the format of
    /// Envoy's admin `/config_dump`.
    pub fn config_dump(&self, version: &str) -> Result<serde_json::Value, String> {
        let listeners = admin::ListenersConfigDump {
            version_info: version.to_owned(),
            dynamic_listeners: self
                .listeners
                .iter()
                .map(|l| admin::listeners_config_dump::DynamicListener {
                    name: l.name.clone(),
                    active_state: Some(admin::listeners_config_dump::DynamicListenerState {
                        version_info: version.to_owned(),
                        listener: Some(pack(l)),
                        last_updated: None,
                    }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let routes = admin::RoutesConfigDump {
            dynamic_route_configs: self
                .route_configs
                .iter()
                .map(|r| admin::routes_config_dump::DynamicRouteConfig {
                    version_info: version.to_owned(),
                    route_config: Some(pack(r)),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let clusters = admin::ClustersConfigDump {
            version_info: version.to_owned(),
            dynamic_active_clusters: self
                .clusters
                .iter()
                .map(|c| admin::clusters_config_dump::DynamicCluster {
                    version_info: version.to_owned(),
                    cluster: Some(pack(c)),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let endpoints = admin::EndpointsConfigDump {
            dynamic_endpoint_configs: self
                .load_assignments
                .iter()
                .map(|e| admin::endpoints_config_dump::DynamicEndpointConfig {
                    version_info: version.to_owned(),
                    endpoint_config: Some(pack(e)),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let dump = admin::ConfigDump {
            configs: vec![
                pack(&listeners),
                pack(&routes),
                pack(&clusters),
                pack(&endpoints),
            ],
        };
        to_json(&dump)
    }
}
