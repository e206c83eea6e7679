/// Everything the checks need to know about one node, gathered by the
/// command-line tool (see `Inspector` there) and judged here without I/O.
public struct NodeFacts: Sendable, Equatable {
    public var name: String
    /// nil when the node answered; else why not (masked).
    public var connectionError: String?
    /// A read that failed after connecting (masked), e.g. a catalog or one of
    /// mmlite's tables the role may not read: the node answered, its facts are incomplete.
    public var readError: ReadError?
    public var versionNumber: Int = 0
    public var versionString: String = ""
    public var database: String = ""
    public var role: String = ""
    /// `SHOW`-style text of the settings mmlite cares about; absent = unknown to this server.
    public var settings: [String: String] = [:]
    public var privileges = Privileges()
    /// The role this node's peer_dsn names, looked up on this node (nil: the peer_dsn names no user).
    public var peerRole: PeerRoleFacts?
    /// User tables (regular and partitioned) of the node, by name.
    public var tables: [QualifiedName: TableFacts] = [:]
    /// Replication slots that are not this mesh's.
    public var otherSlots: Int = 0
    /// Subscriptions on this node that are not this mesh's (they use workers and origins).
    public var otherSubscriptions: Int = 0
    /// Whether the mmlite extension's files are installed (`pg_available_extensions`).
    public var pluginFilesInstalled: Bool?
    /// Result of creating a temporary slot with the mmlite plugin (only done when needed).
    public var pluginProbe: ProbeResult = .notRun
    /// For each peer: whether this node reaches it with the peer's peer_dsn.
    public var peerProbes: [String: ProbeResult] = [:]
    /// Whether this node's role can create the native apply trigger's C function (opted-in tables only).
    public var nativeApplyProbe: ProbeResult = .notRun
    public var state: NodeState?
    /// The opted-in tables' columns and their conflict-handling objects (nil: none opt in, or not read).
    public var conflictObjects: DriftFacts?

    public init(name: String) { self.name = name }

    /// Why the node's facts are missing: the connection's or the read's error.
    public var failure: String? { connectionError ?? readError?.message }

    /// Connected and every fact read.
    public var reachable: Bool { connectionError == nil && readError == nil }
    public var capabilities: ServerCapabilities { ServerCapabilities(versionNumber: versionNumber) }
    public var major: Int { capabilities.major }

    /// PostgreSQL 16+ makes a subscription owned by a non-superuser send a
    /// password given in its connection string (`password_required`).
    public var subscriptionsNeedPassword: Bool {
        reachable && !privileges.superuser && capabilities.nonSuperuserSubscriptions
    }
}

public enum ProbeResult: Sendable, Equatable {
    case notRun
    case ok
    /// The probe could not run (e.g. missing privilege); the text says why.
    case skipped(String)
    /// The server refused: its error code (nil when it gave none) decides,
    /// the message is shown.
    case failed(sqlState: SQLState?, message: String)
}

/// Why creating a slot with the mmlite plugin failed, decided by SQLSTATE.
public enum PluginFailure: Sendable, Equatable {
    /// `output_plugin_libraries` does not list mmlite (the server raises
    /// insufficient_privilege; only servers with that setting do).
    case notAllowed
    /// The library is not installed (undefined_file).
    case notInstalled
    /// Anything else.
    case broken

    /// `allowListExists`: the server has the `output_plugin_libraries` setting.
    public init(sqlState: SQLState?, allowListExists: Bool) {
        switch sqlState {
        case .insufficientPrivilege? where allowListExists: self = .notAllowed
        case .undefinedFile?: self = .notInstalled
        default: self = .broken
        }
    }
}

public struct ColumnFacts: Sendable, Equatable {
    public var name: String
    public var type: String
    /// Column default expression, if any.
    public var defaultExpression: String?
    /// "a" / "d" for identity columns, nil otherwise.
    public var identity: String?
    /// Position in the primary key (nil: not part of it).
    public var keyPosition: Int?
    public init(name: String, type: String, defaultExpression: String? = nil, identity: String? = nil, keyPosition: Int? = nil) {
        self.name = name
        self.type = type
        self.defaultExpression = defaultExpression
        self.identity = identity
        self.keyPosition = keyPosition
    }
}

public struct TableFacts: Sendable, Equatable {
    public var name: QualifiedName
    public var columns: [ColumnFacts]
    public var hasPrimaryKey: Bool
    /// `relreplident`: d (default = primary key), n (nothing), f (full), i (index).
    public var replicaIdentity: String
    public var isOwner: Bool
    public var rowEstimate: Int64
    /// Unique indexes other than the primary key (and other than the replica identity index).
    public var secondaryUniqueIndexes: [String] = []

    public init(name: QualifiedName, columns: [ColumnFacts], hasPrimaryKey: Bool, replicaIdentity: String = "d",
                isOwner: Bool = true, rowEstimate: Int64 = 0) {
        self.name = name
        self.columns = columns
        self.hasPrimaryKey = hasPrimaryKey
        self.replicaIdentity = replicaIdentity
        self.isOwner = isOwner
        self.rowEstimate = rowEstimate
    }

    /// Whether UPDATE and DELETE can be replicated.
    public var hasReplicaIdentity: Bool {
        switch replicaIdentity {
        case "f", "i": return true
        case "d": return hasPrimaryKey
        default: return false
        }
    }
}

extension MeshView {
    /// The mesh as gathered facts show it: versions and states of the nodes
    /// that answered (an unreachable node's version is unknown).
    public init(config: MeshConfig, facts: [NodeFacts]) {
        let reachable = facts.filter(\.reachable)
        self.init(config: config,
                  versions: Dictionary(reachable.map { ($0.name, $0.versionNumber) }, uniquingKeysWith: { a, _ in a }),
                  states: Dictionary(reachable.compactMap { node in node.state.map { (node.name, $0) } }, uniquingKeysWith: { a, _ in a }))
    }
}

/// Why reading a connected node's facts failed.
public struct ReadError: Sendable, Equatable {
    /// The server's message (masked).
    public var message: String
    public var sqlState: SQLState?
    public init(message: String, sqlState: SQLState?) {
        self.message = message
        self.sqlState = sqlState
    }

    /// The role lacks a right; the server is fine.
    public var missingPrivilege: Bool { sqlState == .insufficientPrivilege }
}
