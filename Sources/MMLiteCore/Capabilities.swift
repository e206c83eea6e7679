/// What a PostgreSQL major can do, as far as mmlite is concerned: the one
/// table every version-dependent decision reads (catalog columns, statement
/// syntax, privileges, checks).
public struct ServerCapabilities: Sendable, Equatable {
    /// The server's major version, e.g. 15.
    public var major: Int

    public init(major: Int) { self.major = major }
    public init(versionNumber: Int) { self.major = versionNumber / 10000 }

    /// The majors mmlite is tested on.
    public static let supportedMajors = 13...18

    public var isSupported: Bool { Self.supportedMajors.contains(major) }
    /// `CREATE SUBSCRIPTION ... WITH (origin = none)` and `pg_subscription.suborigin` (16+).
    public var originNone: Bool { major >= 16 }
    /// `pg_stat_subscription_stats` (apply/sync error counts), 15+.
    public var subscriptionStats: Bool { major >= 15 }
    /// `ALTER SUBSCRIPTION ... SKIP` and `pg_subscription.subskiplsn`, 15+.
    public var subscriptionSkip: Bool { major >= 15 }
    /// `CREATE_REPLICATION_SLOT ... (SNAPSHOT 'export')` option syntax, 15+ (before: `EXPORT_SNAPSHOT`).
    public var replicationCommandOptions: Bool { major >= 15 }
    /// `pg_create_subscription` role: non-superusers may create subscriptions, 16+.
    public var nonSuperuserSubscriptions: Bool { major >= 16 }
    /// `GRANT SET ON PARAMETER` (e.g. session_replication_role for a non-superuser), 15+.
    public var grantSetOnParameter: Bool { major >= 15 }
    /// `max_active_replication_origins` is its own setting (18+; before, origins count against max_replication_slots).
    public var separateOriginLimit: Bool { major >= 18 }
    /// `hash_record_extended(record, bigint)` is callable, 14+ (diff hashes rows by value).
    public var recordHash: Bool { major >= 14 }
}
