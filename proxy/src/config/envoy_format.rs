//! Envoy-format configuration files: what an Envoy user already has.
//!
//! Two shapes are read, as YAML or JSON in Envoy's canonical proto mapping:
//! - a bootstrap with `static_resources: { listeners: [...], clusters: [...] }` (and
//!   optionally `admin.address`);
//! - a resource list `resources: [ { "@type": ...Listener, ... }, ... ]`, the shape of
//!   Envoy's file-based dynamic configuration and of an xDS response.
//!
//! Unknown fields are errors, as in Envoy. What the proxy does with the resources is
//! decided by [`crate::snapshot::translate`], exactly as for resources from a file or a
//! control plane.

use std::net::SocketAddr;

use envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap;
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::{address, socket_address};
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use prost::{Message, Name};
use prost_reflect::{DeserializeOptions, DynamicMessage};

use super::resources::descriptor_pool;
use super::{Problem, Resources};

/// Whether `text` is Envoy-format (has `static_resources` or `resources` at the top).
pub fn looks_like_envoy(text: &str) -> bool {
    match serde_saphyr::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(map)) => {
            map.contains_key("static_resources") || map.contains_key("resources")
        }
        _ => false,
    }
}

/// Parses Envoy-format text into resources and the admin address, if any.
pub fn parse(text: &str) -> Result<(Resources, Option<SocketAddr>), Vec<Problem>> {
    let value: serde_json::Value = serde_saphyr::from_str(text).map_err(|e| {
        vec![Problem::new(
            "",
            e.to_string().lines().next().unwrap_or_default(),
        )]
    })?;
    if value.get("resources").is_some() {
        return parse_resource_list(&value).map(|r| (r, None));
    }
    let boot: Bootstrap = decode_json(&value, "bootstrap")?;
    let admin = boot
        .admin
        .as_ref()
        .and_then(|a| a.address.as_ref())
        .and_then(|a| a.address.as_ref())
        .and_then(|a| match a {
            address::Address::SocketAddress(sa) => {
                let port = match sa.port_specifier {
                    Some(socket_address::PortSpecifier::PortValue(p)) => p,
                    _ => return None,
                };
                format!("{}:{port}", bracket(&sa.address)).parse().ok()
            }
            _ => None,
        });
    let statics = boot.static_resources.unwrap_or_default();
    Ok((
        Resources {
            listeners: statics.listeners,
            clusters: statics.clusters,
            ..Resources::default()
        },
        admin,
    ))
}

fn bracket(ip: &str) -> String {
    if ip.contains(':') && !ip.starts_with('[') {
        format!("[{ip}]")
    } else {
        ip.to_owned()
    }
}

fn parse_resource_list(value: &serde_json::Value) -> Result<Resources, Vec<Problem>> {
    let mut out = Resources::default();
    let mut problems = Vec::new();
    let list = value["resources"].as_array().cloned().unwrap_or_default();
    for (i, item) in list.iter().enumerate() {
        let place = format!("resources[{i}]");
        let type_url = item
            .get("@type")
            .and_then(|t| t.as_str())
            .unwrap_or_default();
        let mut body = item.clone();
        if let Some(obj) = body.as_object_mut() {
            obj.remove("@type");
        }
        let result = match type_url.rsplit('/').next().unwrap_or_default() {
            n if n == Listener::full_name() => {
                decode_json(&body, &place).map(|m| out.listeners.push(m))
            }
            n if n == RouteConfiguration::full_name() => {
                decode_json(&body, &place).map(|m| out.route_configs.push(m))
            }
            n if n == Cluster::full_name() => {
                decode_json(&body, &place).map(|m| out.clusters.push(m))
            }
            n if n == ClusterLoadAssignment::full_name() => {
                decode_json(&body, &place).map(|m| out.load_assignments.push(m))
            }
            other => Err(vec![Problem::new(
                format!("{place}.@type"),
                format!("unsupported resource type {other:?}"),
            )]),
        };
        if let Err(mut p) = result {
            problems.append(&mut p);
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// Decodes Envoy's JSON mapping of `T` through the descriptor pool.
fn decode_json<T: Message + Name + Default>(
    value: &serde_json::Value,
    place: &str,
) -> Result<T, Vec<Problem>> {
    let pool = descriptor_pool().map_err(|e| vec![Problem::new(place, e)])?;
    let desc = pool.get_message_by_name(&T::full_name()).ok_or_else(|| {
        vec![Problem::new(
            place,
            format!("no descriptor for {}", T::full_name()),
        )]
    })?;
    let options = DeserializeOptions::new().deny_unknown_fields(true);
    // Track where in the document the deserializer was when it failed.
    let mut track = serde_path_to_error::Track::new();
    let tracked = serde_path_to_error::Deserializer::new(value, &mut track);
    let dynamic =
        DynamicMessage::deserialize_with_options(desc, tracked, &options).map_err(|e| {
            let at = track.path().to_string();
            let place = if at == "." {
                place.to_owned()
            } else {
                format!("{place}.{at}")
            };
            vec![Problem::new(place, e.to_string())]
        })?;
    T::decode(dynamic.encode_to_vec().as_slice())
        .map_err(|e| vec![Problem::new(place, e.to_string())])
}
