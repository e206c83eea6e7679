/// A PostgreSQL error code (SQLSTATE, appendix A of the manual). Decisions
/// about a server's answer read this code, never the message text, which
/// changes between versions and with `lc_messages`.
public struct SQLState: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }

    /// nil for a nil code (a client-side or connection error has none).
    public init?(_ code: String?) {
        guard let code else { return nil }
        self.init(rawValue: code)
    }

    public var description: String { rawValue }

    /// 42501 insufficient_privilege: also what a server with
    /// `output_plugin_libraries` raises for a plugin it does not allow.
    public static let insufficientPrivilege = SQLState(rawValue: "42501")
    /// 58P01 undefined_file: a library (e.g. the output plugin) is not installed.
    public static let undefinedFile = SQLState(rawValue: "58P01")
    /// 42883 undefined_function: e.g. a library without the function asked for.
    public static let undefinedFunction = SQLState(rawValue: "42883")
    /// 55006 object_in_use: e.g. a replication slot a walsender holds.
    public static let objectInUse = SQLState(rawValue: "55006")
    /// 2F003 prohibited_sql_statement_attempted: what PostgreSQL 16+ raises
    /// when a non-superuser's subscription would connect without a password.
    public static let prohibitedSQLStatementAttempted = SQLState(rawValue: "2F003")
    /// 42P01 undefined_table and 3F000 invalid_schema_name: e.g. a subscription
    /// whose publication lists tables this node does not have (yet).
    public static let undefinedTable = SQLState(rawValue: "42P01")
    public static let invalidSchemaName = SQLState(rawValue: "3F000")
    /// 25001 active_sql_transaction: a statement that runs only outside a
    /// transaction block (e.g. CREATE INDEX CONCURRENTLY).
    public static let activeSQLTransaction = SQLState(rawValue: "25001")
    /// 40P01 deadlock_detected and 40001 serialization_failure: PostgreSQL
    /// rolled the transaction back to let another one go on; running it again
    /// is how the manual says to handle them (e.g. a re-install of conflict
    /// handling meeting an apply worker that retries a stuck change).
    public static let deadlockDetected = SQLState(rawValue: "40P01")
    public static let serializationFailure = SQLState(rawValue: "40001")

    /// Whether a statement that failed with this code, alone in its
    /// transaction, may simply be run again.
    public var isTransient: Bool { self == .deadlockDetected || self == .serializationFailure }
}
