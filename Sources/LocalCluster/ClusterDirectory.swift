import Foundation

/// Local clusters in one directory, started and removed together: what
/// `mmlite sandbox` needs, and what the test harness (ClusterHarness) builds on.
public final class ClusterDirectory {
    /// Settings for a cluster of a local mesh: logical replication with room
    /// for meshes, quick retries, and durability traded for speed (the data
    /// is throwaway).
    public static func meshSettings(for installation: PGInstallation) -> [String: String] {
        var settings = [
            "wal_level": "logical",
            "max_replication_slots": "32",
            "max_wal_senders": "32",
            "max_logical_replication_workers": "16",
            "max_worker_processes": "32",
            "max_connections": "60",
            "shared_buffers": "32MB",
            "fsync": "off",
            "full_page_writes": "off",
            "track_commit_timestamp": "on",
            // mmlite ddl commits a migration with PREPARE TRANSACTION on every node.
            "max_prepared_transactions": "10",
            "wal_retrieve_retry_interval": "'500ms'",
            "wal_receiver_status_interval": "'1s'",
            "log_line_prefix": "'%m [%p] %a '",
            "log_min_messages": "warning",
        ]
        if installation.knowsOutputPluginLibraries {
            settings["output_plugin_libraries"] = "'pgoutput, test_decoding, mmlite'"
        }
        return settings
    }

    public let directory: String
    public private(set) var clusters: [Cluster] = []

    /// Creates `directory` (and gives it to the server owner when root).
    public init(directory: String) throws {
        self.directory = directory
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o755])
        try giveToServerOwner(directory)
    }

    /// Creates and starts a cluster on a free loopback port. `settings` are
    /// added to (and override) `meshSettings(for:)`; a value is written
    /// verbatim into postgresql.conf. `authentication`: see `Cluster.Authentication`.
    @discardableResult
    public func startCluster(name: String, installation: PGInstallation,
                             settings: [String: String] = [:],
                             authentication: Cluster.Authentication = .trust) throws -> Cluster {
        var merged = Self.meshSettings(for: installation)
        merged.merge(settings) { $1 }
        let cluster = Cluster(name: name, installation: installation, directory: directory, port: try freeLoopbackPort(),
                              authentication: authentication)
        try cluster.initialize(settings: merged)
        clusters.append(cluster)
        // Another process may take the port between our probe and the bind: retry.
        var lastError: Error?
        for attempt in 1...5 {
            do {
                try cluster.start()
                return cluster
            } catch {
                lastError = error
                if !cluster.serverLog().contains("could not bind") && !cluster.serverLog().contains("in use") { break }
                // Keep the failed attempt's log apart: its FATAL is not an error of the cluster that runs.
                try? FileManager.default.moveItem(atPath: cluster.logFile, toPath: cluster.logFile + ".port-taken-\(attempt)")
                try cluster.setPort(try freeLoopbackPort())
            }
        }
        throw ClusterError("could not start \(cluster): \(lastError.map { "\($0)" } ?? "")\n\(cluster.serverLog())")
    }

    /// Stops and deletes every cluster started here, and the directory.
    public func destroyAll() {
        for cluster in clusters { cluster.destroy() }
        clusters.removeAll()
        try? FileManager.default.removeItem(atPath: directory)
    }
}
