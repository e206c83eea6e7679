/// Statements of join and part (shared by the run and `--dry-run`).
public enum JoinSQL {
    /// Replication-protocol command creating a logical slot whose snapshot is
    /// exported (usable with `SET TRANSACTION SNAPSHOT` while the connection
    /// stays open). PostgreSQL 15 changed the syntax; this is the one place
    /// that knows.
    public static func createSlotExportingSnapshot(slot: String, plugin: String, major: Int) -> String {
        if ServerCapabilities(major: major).replicationCommandOptions {
            return "CREATE_REPLICATION_SLOT \(SQL.identifier(slot)) LOGICAL \(SQL.identifier(plugin)) (SNAPSHOT 'export')"
        }
        return "CREATE_REPLICATION_SLOT \(SQL.identifier(slot)) LOGICAL \(SQL.identifier(plugin)) EXPORT_SNAPSHOT"
    }

    public static func createSlot(_ slot: String, plugin: String) -> String {
        "SELECT lsn::text FROM pg_create_logical_replication_slot(\(SQL.literal(slot)), \(SQL.literal(plugin)))"
    }

    public static func slotPosition(_ slot: String) -> String {
        "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = \(SQL.literal(slot))"
    }

    public static func disableSubscription(_ name: String) -> String {
        "ALTER SUBSCRIPTION \(SQL.identifier(name)) DISABLE"
    }

    public static func enableSubscription(_ name: String) -> String {
        "ALTER SUBSCRIPTION \(SQL.identifier(name)) ENABLE"
    }

    /// An empty transaction that commits (it takes a transaction id): its
    /// commit record wakes the walsenders, which send their subscribers a
    /// keepalive, which wakes their apply workers.
    public static let wakeSubscribers = "SELECT pg_catalog.pg_current_xact_id()::text"

    /// Whether the subscription's apply worker still runs.
    public static func workerRunning(_ name: String) -> String {
        "SELECT count(*) FROM pg_stat_subscription w JOIN pg_subscription s ON s.oid = w.subid WHERE s.subname = \(SQL.literal(name)) AND w.pid IS NOT NULL"
    }

    /// How far this node has applied the subscription's publisher (the end of
    /// the last applied commit). `flush = false`: the copy reads committed
    /// rows, which is what this in-memory position describes once the worker
    /// has exited.
    public static func appliedPosition(_ subscription: String) -> String {
        "SELECT pg_replication_origin_progress('pg_' || oid, false)::text FROM pg_subscription WHERE subname = \(SQL.literal(subscription))"
    }

    /// Whether a walsender uses the slot ('t'), nothing when it does not exist.
    public static func slotActive(_ slot: String) -> String {
        "SELECT active FROM pg_replication_slots WHERE slot_name = \(SQL.literal(slot))"
    }

    public static func currentPosition() -> String { "SELECT pg_current_wal_lsn()::text" }

    /// The next transaction id to be assigned: every transaction still running has a smaller one.
    public static func transactionHorizon() -> String {
        "SELECT pg_catalog.pg_snapshot_xmax(pg_catalog.pg_current_snapshot())::text"
    }

    /// Whether every transaction older than `horizon` has ended.
    public static func transactionsEnded(since horizon: String) -> String {
        "SELECT pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot()) >= \(SQL.literal(horizon))::xid8"
    }

    public static func advanceSlot(_ slot: String, to lsn: String) -> String {
        "SELECT pg_replication_slot_advance(\(SQL.literal(slot)), \(SQL.literal(lsn)))"
    }

    public static func dropSlot(_ slot: String) -> String {
        "SELECT pg_drop_replication_slot(\(SQL.literal(slot)))"
    }

    /// Drops the slot if it exists (a re-run finds it gone).
    public static func dropSlotIfExists(_ slot: String) -> String {
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = \(SQL.literal(slot))"
    }

    /// Drops a subscription without touching its remote slot (mmlite drops
    /// slots itself, also when the publisher is down).
    public static func dropSubscription(_ name: String) -> [String] {
        ["ALTER SUBSCRIPTION \(SQL.identifier(name)) DISABLE",
         "ALTER SUBSCRIPTION \(SQL.identifier(name)) SET (slot_name = NONE)",
         "DROP SUBSCRIPTION \(SQL.identifier(name))"]
    }

    public static func createOrigin(_ origin: String) -> String {
        "SELECT pg_replication_origin_create(\(SQL.literal(origin))) WHERE NOT EXISTS (SELECT 1 FROM pg_replication_origin WHERE roname = \(SQL.literal(origin)))"
    }

    public static func originProgress(_ origin: String) -> String {
        "SELECT pg_replication_origin_progress(\(SQL.literal(origin)), false)::text FROM pg_replication_origin WHERE roname = \(SQL.literal(origin))"
    }

    public static func dropOrigin(_ origin: String) -> String {
        "SELECT pg_replication_origin_drop(roname) FROM pg_replication_origin WHERE roname = \(SQL.literal(origin))"
    }

    /// The copy session on the joining node: changes tagged with `origin`,
    /// user triggers and foreign-key checks off.
    public static func copySessionSetup(origin: String) -> [String] {
        ["SET session_replication_role = replica",
         "SELECT pg_replication_origin_session_setup(\(SQL.literal(origin)))",
         "BEGIN"]
    }

    /// Before COMMIT: records `lsn` as the origin's progress in the same commit.
    public static func copyCommit(lsn: String) -> [String] {
        ["SELECT pg_replication_origin_xact_setup(\(SQL.literal(lsn)), now())", "COMMIT",
         "SELECT pg_replication_origin_session_reset()", "RESET session_replication_role"]
    }

    public static func hasRows(_ table: QualifiedName) -> String {
        "SELECT EXISTS (SELECT 1 FROM \(table.sql)) AS has_rows"
    }

    /// The columns a copy moves (generated columns are computed on arrival).
    public static let copyColumns = """
        SELECT a.attname AS column_name FROM pg_catalog.pg_attribute a
        WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
        ORDER BY a.attnum
        """

    public static let tableSize = "SELECT pg_catalog.pg_table_size($1::regclass) AS bytes"

    public static let beginSnapshotRead = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"

    public static func setSnapshot(_ snapshot: String) -> String { "SET TRANSACTION SNAPSHOT \(SQL.literal(snapshot))" }

    public static func truncate(_ tables: [QualifiedName]) -> String {
        "TRUNCATE \(tables.map(\.sql).joined(separator: ", "))"
    }

    /// `columns` empty: no column list (for printing the plan).
    public static func copyOut(_ table: QualifiedName, columns: [String]) -> String {
        "COPY \(table.sql)\(columnList(columns)) TO STDOUT (FORMAT binary)"
    }

    public static func copyIn(_ table: QualifiedName, columns: [String]) -> String {
        "COPY \(table.sql)\(columnList(columns)) FROM STDIN (FORMAT binary)"
    }

    static func columnList(_ columns: [String]) -> String {
        columns.isEmpty ? "" : " (" + columns.map(SQL.identifier).joined(separator: ", ") + ")"
    }

    /// Whether a slot needs advancing: R_P ahead of the slot's position.
    public static func needsAdvance(slotAt: LSN, applied: LSN) -> Bool { applied > slotAt }
}

/// Progress of one table's copy, for the progress lines.
public struct CopyProgress: Sendable, Equatable {
    public var bytes: UInt64
    public var expectedBytes: UInt64
    public var seconds: Double

    public init(bytes: UInt64, expectedBytes: UInt64, seconds: Double) {
        self.bytes = bytes
        self.expectedBytes = expectedBytes
        self.seconds = seconds
    }

    public var rate: Double { seconds > 0 ? Double(bytes) / seconds : 0 }

    /// Seconds left at the current rate; nil when unknown.
    public var eta: Double? {
        guard rate > 0, expectedBytes > bytes else { return expectedBytes > 0 && bytes >= expectedBytes ? 0 : nil }
        return Double(expectedBytes - bytes) / rate
    }

    /// "12 MB of ~40 MB, 6.1 MB/s, ETA 5 s"
    public var line: String {
        var text = formatBytes(bytes)
        if expectedBytes > 0 { text += " of ~" + formatBytes(expectedBytes) }
        text += ", \(formatBytes(UInt64(rate)))/s"
        if let eta { text += ", ETA \(Int(eta.rounded(.up))) s" }
        return text
    }
}
