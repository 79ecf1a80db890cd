//! The API versions Silt handles: one table, read by ApiVersions, by the frame
//! decoder's version check and by `docs/protocol.md`.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};
use silt_broker::error::error_code;

/// Every API handled, with the inclusive version range handled. Minimums are the oldest
/// versions the kafka-protocol crate still decodes (Kafka 4.0 removed older ones);
/// maximums are the newest versions whose every field Silt implements.
pub(crate) const SUPPORTED_APIS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 11),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 8),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 8),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DescribeCluster, 0, 1),
];

/// Whether `version` of `api_key` is handled.
pub(crate) fn is_supported(api_key: ApiKey, version: i16) -> bool {
    SUPPORTED_APIS
        .iter()
        .any(|(supported, min_version, max_version)| {
            *supported == api_key && (*min_version..=*max_version).contains(&version)
        })
}

fn api_version_list() -> Vec<ApiVersion> {
    SUPPORTED_APIS
        .iter()
        .map(|(api_key, min_version, max_version)| {
            ApiVersion::default()
                .with_api_key(*api_key as i16)
                .with_min_version(*min_version)
                .with_max_version(*max_version)
        })
        .collect()
}

/// The ApiVersions answer.
pub(crate) fn api_versions_response() -> ApiVersionsResponse {
    ApiVersionsResponse::default()
        .with_error_code(error_code(None))
        .with_api_keys(api_version_list())
}

/// The answer to an ApiVersions request of a version newer than handled (KIP-511).
pub(crate) fn unsupported_version_response() -> ApiVersionsResponse {
    ApiVersionsResponse::default()
        .with_error_code(ResponseError::UnsupportedVersion.code())
        .with_api_keys(api_version_list())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::protocol::Message;

    #[test]
    fn every_advertised_range_is_decodable_by_the_protocol_crate() {
        for (api_key, min_version, max_version) in SUPPORTED_APIS {
            let range = api_key.valid_versions();
            assert!(
                range.min <= *min_version && *max_version <= range.max,
                "{api_key:?} {min_version}..={max_version} outside {range}"
            );
        }
        assert_eq!(ApiVersionsResponse::VERSIONS.max, 4);
    }
}

#[cfg(test)]
mod docs_tests {
    use super::SUPPORTED_APIS;

    #[test]
    fn docs_protocol_table_matches_the_advertised_versions() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md");
        let text = std::fs::read_to_string(path).expect("docs/protocol.md exists");
        let rows: Vec<(i16, i16, i16)> = text
            .lines()
            .filter_map(|line| {
                let cells: Vec<&str> = line.split('|').map(str::trim).collect();
                let key = cells.get(1)?.parse::<i16>().ok()?;
                let (min, max) = cells.get(3)?.split_once('–')?;
                Some((key, min.parse().ok()?, max.parse().ok()?))
            })
            .collect();
        assert_eq!(
            rows.len(),
            SUPPORTED_APIS.len(),
            "one docs row per supported API"
        );
        for (api_key, min_version, max_version) in SUPPORTED_APIS {
            assert!(
                rows.contains(&(*api_key as i16, *min_version, *max_version)),
                "docs/protocol.md lacks {api_key:?} {min_version}–{max_version}"
            );
        }
    }
}
