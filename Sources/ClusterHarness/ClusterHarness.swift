import Foundation
import PostgresClient

/// Starts throwaway clusters and removes them again: when `destroyAll()` is
/// called, when the harness is deallocated, and — for a process that died
/// before either — by the next harness that starts on this machine.
public final class ClusterHarness {
    /// Settings every cluster gets: logical replication with room for meshes,
    /// quick retries, and durability traded for speed (throwaway data).
    public static func defaultSettings(for installation: PGInstallation) -> [String: String] {
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
    /// Keep clusters running after this object goes away (the sandbox).
    public let persistent: Bool

    /// - Parameter directory: where clusters live. Default: a new folder under /tmp
    ///   (short: Unix socket paths are limited to ~100 bytes; and reachable by the
    ///   `postgres` user when running as root).
    public init(directory: String? = nil, persistent: Bool = false) throws {
        Self.reapAbandoned()
        self.persistent = persistent
        if let directory {
            self.directory = directory
        } else {
            self.directory = "/tmp/mmlite-h-\(getpid())-\(UInt32.random(in: 0..<UInt32.max))"
        }
        try FileManager.default.createDirectory(atPath: self.directory, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o755])
        if !persistent {
            try "\(getpid())\n".write(toFile: self.directory + "/owner.pid", atomically: true, encoding: .utf8)
        }
        try giveToServerOwner(self.directory)
    }

    deinit {
        if !persistent { destroyAll() }
    }

    /// Creates and starts a cluster. `settings` are added to (and override)
    /// `defaultSettings(for:)`; a value is written verbatim into postgresql.conf.
    @discardableResult
    public func startCluster(name: String, installation: PGInstallation,
                             settings: [String: String] = [:]) throws -> Cluster {
        var merged = Self.defaultSettings(for: installation)
        merged.merge(settings) { $1 }
        let cluster = Cluster(name: name, installation: installation, directory: directory, port: try freeLoopbackPort())
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
        throw HarnessError("could not start \(cluster): \(lastError.map { "\($0)" } ?? "")\n\(cluster.serverLog())")
    }

    /// Starts `count` clusters named n1, n2, ... of one installation.
    public func startClusters(_ count: Int, installation: PGInstallation,
                              settings: [String: String] = [:]) throws -> [Cluster] {
        try (1...count).map { try startCluster(name: "n\($0)", installation: installation, settings: settings) }
    }

    public func destroyAll() {
        for cluster in clusters { cluster.destroy() }
        clusters.removeAll()
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// Stops and deletes clusters left by harness processes that no longer run
    /// (a crashed or killed test run).
    public static func reapAbandoned() {
        let fileManager = FileManager.default
        guard let entries = try? fileManager.contentsOfDirectory(atPath: "/tmp") else { return }
        for entry in entries where entry.hasPrefix("mmlite-h-") {
            let directory = "/tmp/" + entry
            guard let text = try? String(contentsOfFile: directory + "/owner.pid", encoding: .utf8),
                  let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)),
                  kill(pid, 0) != 0, errno == ESRCH
            else { continue }
            for child in (try? fileManager.contentsOfDirectory(atPath: directory)) ?? [] {
                let pidFile = directory + "/" + child + "/postmaster.pid"
                guard let postmaster = try? String(contentsOfFile: pidFile, encoding: .utf8),
                      let first = postmaster.split(separator: "\n").first, let serverPID = Int32(first)
                else { continue }
                kill(serverPID, SIGQUIT)  // immediate shutdown
            }
            usleep(300_000)
            try? fileManager.removeItem(atPath: directory)
        }
    }
}

/// Polls `condition` until it is true or `timeout` seconds pass; returns
/// whether it became true. Errors thrown by `condition` count as "not yet".
@discardableResult
public func waitUntil(timeout: Double = 30, interval: Double = 0.1, _ condition: () throws -> Bool) -> Bool {
    let deadline = Date().addingTimeInterval(timeout)
    repeat {
        if (try? condition()) == true { return true }
        usleep(UInt32(interval * 1_000_000))
    } while Date() < deadline
    return (try? condition()) == true
}
