/// Upkeep of the conflict log and of the change/version tables of opted-in
/// tables (`mmlite conflicts prune`, the sizes `mmlite status` shows), and
/// the record `mmlite resolve --skip` leaves. Pure SQL generation; see
/// docs/conflicts.md. Layout-independent: it reads the change and version
/// tables only through `ConflictSQL` (prune) and the catalog (sizes).

/// A retention period from the configuration file, e.g. "30 days".
/// Deliberately narrow (a number and a unit) so it means the same to every
/// PostgreSQL and cannot carry SQL.
public struct RetentionInterval: Sendable, Equatable, CustomStringConvertible {
    public var amount: Int
    /// Singular PostgreSQL unit: minute, hour, day, week, month, year.
    public var unit: String

    static let units: [String: String] = [
        "minute": "minute", "minutes": "minute", "min": "minute", "mins": "minute",
        "hour": "hour", "hours": "hour", "h": "hour",
        "day": "day", "days": "day", "d": "day",
        "week": "week", "weeks": "week", "w": "week",
        "month": "month", "months": "month", "mon": "month",
        "year": "year", "years": "year", "y": "year",
    ]

    public init?(_ text: String) {
        let trimmed = text.trimming(" \t")
        let digits = trimmed.prefix { $0.isASCII && $0.isNumber }
        let rest = trimmed.dropFirst(digits.count).trimming(" \t").lowercased()
        guard !digits.isEmpty, digits.count <= 6, let amount = Int(digits), amount > 0, let unit = Self.units[rest] else { return nil }
        self.amount = amount
        self.unit = unit
    }

    /// Text PostgreSQL reads as an interval: "30 days".
    public var sql: String { "\(amount) \(unit)\(amount == 1 ? "" : "s")" }
    public var description: String { sql }
}

public enum ConflictMaintenance {
    /// Removes conflict-log rows older than `retention` (an interval text);
    /// returns the number of rows removed.
    public static func pruneLog(retention: String) -> String {
        """
        WITH gone AS (
            DELETE FROM mmlite.conflicts WHERE logged_at < pg_catalog.now() - \(SQL.literal(retention))::interval RETURNING 1
        ) SELECT count(*) AS removed FROM gone
        """
    }

    /// Per node: the conflict log's size, and the total size and estimated
    /// rows of the change and version tables (version tables hold the
    /// tombstones). One row, columns named: log_bytes (NULL: no log), change_tables,
    /// change_bytes, change_rows, version_tables, version_bytes, version_rows,
    /// native_apply_tables, installer (owner of schema mmlite), installer_superuser, plugin_installed,
    /// log_readable (whether this role may count the log's rows).
    public static let sizes = """
        SELECT pg_catalog.pg_total_relation_size(pg_catalog.to_regclass('mmlite.conflicts')) AS log_bytes,
               count(*) FILTER (WHERE c.relname LIKE '%\(ConflictContract.changesSuffix)') AS change_tables,
               coalesce(sum(pg_catalog.pg_total_relation_size(c.oid)) FILTER (WHERE c.relname LIKE '%\(ConflictContract.changesSuffix)'), 0)::bigint AS change_bytes,
               coalesce(sum(greatest(c.reltuples, 0)) FILTER (WHERE c.relname LIKE '%\(ConflictContract.changesSuffix)'), 0)::bigint AS change_rows,
               count(*) FILTER (WHERE c.relname LIKE '%\(ConflictContract.versionsSuffix)') AS version_tables,
               coalesce(sum(pg_catalog.pg_total_relation_size(c.oid)) FILTER (WHERE c.relname LIKE '%\(ConflictContract.versionsSuffix)'), 0)::bigint AS version_bytes,
               coalesce(sum(greatest(c.reltuples, 0)) FILTER (WHERE c.relname LIKE '%\(ConflictContract.versionsSuffix)'), 0)::bigint AS version_rows,
               count(*) FILTER (WHERE c.relname LIKE '%\(ConflictContract.changesSuffix)' AND EXISTS (
                   SELECT 1 FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid
                   JOIN pg_catalog.pg_language l ON l.oid = p.prolang
                   WHERE t.tgrelid = c.oid AND t.tgname = 'mmlite_apply' AND l.lanname = 'c')) AS native_apply_tables,
               (SELECT r.rolname FROM pg_catalog.pg_namespace s JOIN pg_catalog.pg_roles r ON r.oid = s.nspowner WHERE s.nspname = 'mmlite') AS installer,
               (SELECT r.rolsuper FROM pg_catalog.pg_namespace s JOIN pg_catalog.pg_roles r ON r.oid = s.nspowner WHERE s.nspname = 'mmlite') AS installer_superuser,
               EXISTS (SELECT 1 FROM pg_catalog.pg_available_extensions WHERE name = 'mmlite') AS plugin_installed,
               pg_catalog.to_regclass('mmlite.conflicts') IS NOT NULL
                   AND pg_catalog.has_table_privilege(pg_catalog.to_regclass('mmlite.conflicts'), 'SELECT') AS log_readable
        FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'mmlite' AND c.relkind = 'r'
        """

    /// Which apply trigger a node's opted-in tables use, for `status`: nil
    /// without opted-in tables; "native", "sql", or "native N/M" when mixed.
    public static func applyLabel(nativeTables: Int, changeTables: Int) -> String? {
        guard changeTables > 0 else { return nil }
        if nativeTables >= changeTables { return "native" }
        return nativeTables == 0 ? "sql" : "native \(nativeTables)/\(changeTables)"
    }

    /// Why a node applies (some) conflicts with SQL, for `status`; nil when all are native.
    /// `installer`: the role owning schema mmlite (it installed conflict
    /// handling) and whether it is a superuser; `pluginInstalled`: whether
    /// the server has mmlite's extension files. Unknown (nil) facts leave the
    /// reason general.
    public static func sqlApplyReason(nativeTables: Int, changeTables: Int, configured: ConflictApply,
                                      installer: (role: String, superuser: Bool)? = nil, pluginInstalled: Bool? = nil) -> String? {
        guard changeTables > nativeTables else { return nil }
        if configured == .sql { return "conflict_apply = \"sql\" in the configuration" }
        var reasons: [String] = []
        if pluginInstalled == false { reasons.append("mmlite.so is not installed on this server") }
        if let installer, !installer.superuser {
            reasons.append("\(installer.role), which installed conflict handling, may not create C functions (only a superuser may)")
        }
        if !reasons.isEmpty { return reasons.joined(separator: "; ") }
        return "mmlite.apply_change() could not be created when apply installed conflict handling: no mmlite.so on this server, an older one, or a role that may not create C functions (not a superuser)"
    }

    /// Rows in the conflict log (run only where it exists).
    public static let logRows = "SELECT count(*) AS log_rows FROM mmlite.conflicts"

    /// Rows of the conflict log, oldest first, optionally since a timestamp
    /// (`$1`, timestamptz text or NULL) and for one table (`$2` or NULL).
    public static let list = """
        SELECT pg_catalog.to_char(logged_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS logged_at, table_name, key::text AS key,
               kind, winner, reason, local_version::text AS local_version, local_row::text AS local_row,
               remote_version::text AS remote_version, remote_row::text AS remote_row, peer, id
        FROM mmlite.conflicts
        WHERE ($1::timestamptz IS NULL OR logged_at >= $1::timestamptz) AND ($2::text IS NULL OR table_name = $2::text)
        ORDER BY logged_at, id
        """

    /// The `--since` value as a timestamp: an interval ("2 hours") counts
    /// back from now, anything else is read as a timestamp. Run as a query
    /// with `$1` = the text; raises if it is neither.
    public static let since = """
        SELECT CASE WHEN $1 ~ '^\\s*[0-9]+\\s*[a-zA-Z]+(\\s+[0-9]+\\s*[a-zA-Z]+)*\\s*$'
                    THEN pg_catalog.now() - $1::interval ELSE $1::timestamptz END::text AS since
        """

    /// What `resolve --skip` records per skipped change (parameters: $1 table,
    /// $2 key jsonb, $3 remote_row jsonb, $4 remote_version jsonb, $5 peer).
    public static let skipKind = "apply_error_skipped"
    public static let skipReason = "skipped by mmlite resolve --skip"
    public static let recordSkip = """
        INSERT INTO mmlite.conflicts (table_name, key, kind, winner, reason, local_version, local_row, remote_version, remote_row, peer)
        VALUES ($1, $2::jsonb, '\(skipKind)', 'local', '\(skipReason)', NULL, NULL, $4::jsonb, $3::jsonb, $5)
        """
}
