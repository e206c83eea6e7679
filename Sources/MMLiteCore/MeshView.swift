/// The mesh as the tool sees it after observing the nodes: which configured
/// nodes are members, which links exist and which filter each one uses. Every
/// command (plan, checks, doctor, status, join, part) asks this one value, so
/// they agree, also about nodes whose version is unknown (unreachable).
public struct MeshView: Sendable {
    public var config: MeshConfig
    /// `server_version_num` of each node that answered.
    public var versions: [String: Int]
    /// This mesh's objects on each node that answered.
    public var states: [String: NodeState]

    public init(config: MeshConfig, versions: [String: Int], states: [String: NodeState]) {
        self.config = config
        self.versions = versions
        self.states = states
    }

    /// Versions taken from the states (every state knows its server's version).
    public init(config: MeshConfig, states: [String: NodeState]) {
        self.init(config: config, versions: states.mapValues(\.versionNumber), states: states)
    }

    public var names: ObjectNames { config.names }
    public var configured: [String] { config.nodes.map(\.name) }

    public func capabilities(of node: String) -> ServerCapabilities? {
        versions[node].map { ServerCapabilities(versionNumber: $0) }
    }

    /// Every ordered pair of distinct configured nodes, in config order.
    public var links: [Link] { Self.links(of: configured) }

    public static func links(of nodes: [String]) -> [Link] {
        nodes.flatMap { publisher in
            nodes.filter { $0 != publisher }.map { Link(publisher: publisher, subscriber: $0) }
        }
    }

    /// The filter a link gets under `[mesh] filter`: nil while either end's
    /// version is unknown; throws when the configured filter cannot work there.
    public func filter(for link: Link) throws -> LinkFilter? {
        guard let publisher = capabilities(of: link.publisher), let subscriber = capabilities(of: link.subscriber) else { return nil }
        return try LinkFilter.choose(config.mesh.filter, publisher: publisher, subscriber: subscriber)
    }

    /// The filter a link actually uses: a slot that exists decides (an mmlite
    /// slot filters whatever the versions), else the configured choice.
    public func effectiveFilter(for link: Link) -> LinkFilter? {
        if let slot = states[link.publisher]?.slots[names.slot(subscriber: link.subscriber)], slot.plugin == LinkFilter.mmlite.slotPlugin {
            return .mmlite
        }
        return try? filter(for: link)
    }

    /// The filter a new slot of the link gets: the configured choice, mmlite
    /// where that cannot be decided (it filters between any versions).
    public func plannedFilter(for link: Link) -> LinkFilter {
        ((try? filter(for: link)) ?? nil) ?? .mmlite
    }

    /// Whether any configured node holds one of the mesh's subscriptions.
    public var isRunning: Bool { Membership.isRunning(config: config, states: states) }

    /// The members (see `Membership.members`).
    public var members: [String] { Membership.members(config: config, states: states) }

    /// Configured nodes that have not joined the running mesh.
    public var pending: [String] { Membership.pending(config: config, states: states) }

    /// Members as `join NODE --from source` sees them.
    public func members(joiningFrom source: String) -> [String] {
        Membership.members(config: config, states: states, joiningFrom: source)
    }

    /// Publishers whose slot for at least one subscriber would use the mmlite
    /// plugin (an unknown subscriber version counts: the plugin may be needed).
    public var publishersNeedingPlugin: Set<String> {
        var result = Set<String>()
        for link in links where versions[link.publisher] != nil {
            if (try? filter(for: link)) ?? nil != .originNone { result.insert(link.publisher) }
        }
        return result
    }
}
