/// What a node's role may do, as gathered from the server (`Inspector`).
public struct Privileges: Sendable, Equatable {
    public var superuser = false
    public var replication = false
    public var createOnDatabase = false
    /// Member of pg_create_subscription (16+).
    public var createSubscription = false
    /// May `SET session_replication_role` (a superuser setting; 15+: `GRANT SET ON PARAMETER`).
    public var setSessionReplicationRole = false
    /// The replication-origin functions this role may execute (EXECUTE is revoked from PUBLIC).
    public var originFunctions: Set<OriginFunction> = []
    public init() {}
}

/// The replication-origin functions `join` calls. Their EXECUTE right is
/// revoked from PUBLIC and can be granted one by one.
public enum OriginFunction: String, CaseIterable, Sendable, Hashable, Comparable {
    case create, drop, progress, sessionSetup, sessionReset, xactSetup

    /// The signature as GRANT and `has_function_privilege` take it.
    public var signature: String {
        switch self {
        case .create: return "pg_replication_origin_create(text)"
        case .drop: return "pg_replication_origin_drop(text)"
        case .progress: return "pg_replication_origin_progress(text, boolean)"
        case .sessionSetup: return "pg_replication_origin_session_setup(text)"
        case .sessionReset: return "pg_replication_origin_session_reset()"
        case .xactSetup: return "pg_replication_origin_xact_setup(pg_lsn, timestamp with time zone)"
        }
    }

    public static func < (a: OriginFunction, b: OriginFunction) -> Bool {
        allCases.firstIndex(of: a)! < allCases.firstIndex(of: b)!
    }
}

/// One right mmlite needs a node's role to hold, with the statement that
/// grants it (run as a superuser or the service's admin role).
public enum RequiredRight: Hashable, Sendable {
    /// The REPLICATION attribute: slots, and join's exported snapshot.
    case replication
    /// CREATE on the database: the publication and the mmlite schema.
    case createOnDatabase
    /// Membership in pg_create_subscription (16+).
    case createSubscription
    /// What no grant gives on this major.
    case superuser(why: String)
    /// Ownership of a mesh table: publishing it, conflict-handling triggers.
    case ownership(QualifiedName)
    /// SET on session_replication_role (15+): join's copy writes as a replica.
    case setSessionReplicationRole
    /// EXECUTE on replication-origin functions.
    case execute([OriginFunction])

    /// What it is for, as a doctor message says it.
    public var purpose: String {
        switch self {
        case .replication: return "the REPLICATION attribute (to create slots)"
        case .createOnDatabase: return "CREATE on the database (to create the publication and the mmlite schema)"
        case .createSubscription: return "membership in pg_create_subscription (to create subscriptions)"
        case .superuser(let why): return "superuser (\(why))"
        case .ownership(let table): return "ownership of \(table.sql) (to publish it)"
        case .setSessionReplicationRole: return "SET on session_replication_role (join's copy writes as a replica, so no trigger fires twice)"
        case .execute(let functions): return "EXECUTE on \(functions.map(\.signature).joined(separator: ", ")) (join marks its copy with a replication origin)"
        }
    }

    /// The statement that grants it to `role` in `database`.
    public func grant(role: String, database: String) -> String {
        let role = SQL.identifier(role)
        switch self {
        case .replication: return "ALTER ROLE \(role) REPLICATION;"
        case .createOnDatabase: return "GRANT CREATE ON DATABASE \(SQL.identifier(database)) TO \(role);"
        case .createSubscription: return "GRANT pg_create_subscription TO \(role);"
        case .superuser: return "ALTER ROLE \(role) SUPERUSER;"
        case .ownership(let table): return "ALTER TABLE \(table.sql) OWNER TO \(role);"
        case .setSessionReplicationRole: return "GRANT SET ON PARAMETER session_replication_role TO \(role);"
        case .execute(let functions): return "GRANT EXECUTE ON FUNCTION \(functions.map(\.signature).joined(separator: ", ")) TO \(role);"
        }
    }
}

/// Which rights each command needs on a node, by major (docs/security.md).
/// A superuser holds them all.
public enum RequiredRights {
    /// `apply` (and being a member): publication, slots, subscriptions, triggers.
    public static func apply(_ capabilities: ServerCapabilities, tables: [QualifiedName]) -> [RequiredRight] {
        var rights: [RequiredRight] = [.replication, .createOnDatabase]
        rights.append(capabilities.nonSuperuserSubscriptions
            ? .createSubscription : .superuser(why: "CREATE SUBSCRIPTION needs it before PostgreSQL 16"))
        rights += tables.map(RequiredRight.ownership)
        return rights
    }

    /// `join NODE`, on NODE: its copy runs as a replica and is tagged with an origin.
    public static func joinTarget(_ capabilities: ServerCapabilities) -> [RequiredRight] {
        [capabilities.grantSetOnParameter
            ? .setSessionReplicationRole : .superuser(why: "SET session_replication_role needs it before PostgreSQL 15"),
         .execute([.create, .drop, .progress, .sessionSetup, .sessionReset, .xactSetup])]
    }

    /// `join --from SOURCE`, on SOURCE: how far it applied each member.
    public static func joinSource(_ capabilities: ServerCapabilities) -> [RequiredRight] {
        [.execute([.progress])]
    }

    /// The rights `facts` lacks of `rights` (an EXECUTE right narrowed to the
    /// functions not held).
    public static func missing(_ rights: [RequiredRight], in facts: NodeFacts) -> [RequiredRight] {
        let held = facts.privileges
        guard !held.superuser else { return [] }
        return rights.compactMap { right in
            switch right {
            case .replication: return held.replication ? nil : right
            case .createOnDatabase: return held.createOnDatabase ? nil : right
            case .createSubscription: return held.createSubscription ? nil : right
            case .superuser: return right
            case .ownership(let table): return (facts.tables[table]?.isOwner ?? true) ? nil : right
            case .setSessionReplicationRole: return held.setSessionReplicationRole ? nil : right
            case .execute(let functions):
                let lacking = functions.filter { !held.originFunctions.contains($0) }
                return lacking.isEmpty ? nil : .execute(lacking)
            }
        }
    }

    /// Merges repeated EXECUTE rights into one (one GRANT statement).
    public static func merged(_ rights: [RequiredRight]) -> [RequiredRight] {
        var functions: [OriginFunction] = []
        var others: [RequiredRight] = []
        for right in rights {
            if case .execute(let list) = right { functions += list.filter { !functions.contains($0) } }
            else if !others.contains(right) { others.append(right) }
        }
        return others + (functions.isEmpty ? [] : [.execute(functions.sorted())])
    }
}

/// The role a node's `peer_dsn` names, as seen on that node (the publisher):
/// every other node's subscription connects as it.
public struct PeerRoleFacts: Sendable, Equatable {
    public var name: String
    public var exists: Bool
    public var superuser: Bool
    public var replication: Bool
    public var canLogin: Bool

    /// Links never copy data (join copies as the node's own role), so the
    /// role needs no SELECT on the tables: REPLICATION and LOGIN are all.
    public init(name: String, exists: Bool, superuser: Bool = false, replication: Bool = false, canLogin: Bool = true) {
        self.name = name
        self.exists = exists
        self.superuser = superuser
        self.replication = replication
        self.canLogin = canLogin
    }
}
