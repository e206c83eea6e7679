/// Which configured nodes belong to the running mesh. See docs/operations.md.
public enum Membership {
    /// The configured nodes that are members of the mesh, in config order.
    ///
    /// A mesh is *running* once any configured node has one of its
    /// subscriptions. While it is not running (a fresh mesh) every configured
    /// node is a member: `apply` builds the mesh over all of them. Once it
    /// runs, a member is a node that has the mesh's publication: `join`
    /// creates it only after the node holds a consistent copy, and `part`
    /// drops it. A configured node without it is *pending*: `apply` leaves it
    /// out and says to `mmlite join` it, so no node is wired in without its data.
    public static func members(config: MeshConfig, states: [String: NodeState]) -> [String] {
        let configured = config.nodes.map(\.name)
        guard isRunning(config: config, states: states) else { return configured }
        return configured.filter { states[$0]?.publication != nil }
    }

    /// Whether any configured node holds one of the mesh's subscriptions.
    public static func isRunning(config: MeshConfig, states: [String: NodeState]) -> Bool {
        config.nodes.contains { node in
            states[node.name]?.subscriptions.keys.contains { config.names.publisher(ofSubscription: $0) != nil } ?? false
        }
    }

    /// Members as `join NODE --from source` sees them: as `members`, except
    /// that a mesh of one node (only `source` has the publication and no node
    /// subscribes yet, e.g. `apply` run with one node in the file) is grown by
    /// joining, so its data is copied rather than assumed identical.
    public static func members(config: MeshConfig, states: [String: NodeState], joiningFrom source: String) -> [String] {
        if !isRunning(config: config, states: states),
           config.nodes.map(\.name).filter({ states[$0]?.publication != nil }) == [source] { return [source] }
        return members(config: config, states: states)
    }

    /// Configured nodes that have not joined the running mesh.
    public static func pending(config: MeshConfig, states: [String: NodeState]) -> [String] {
        let members = Set(members(config: config, states: states))
        return config.nodes.map(\.name).filter { !members.contains($0) }
    }
}

public extension ObjectNames {
    /// On a joining node: the replication origin that tags the initial copy.
    /// Its progress, set in the copy's own transaction, records that the copy
    /// committed (= the source slot's consistent point). Dropped when the join ends.
    var joinOrigin: String { "mmlite_\(mesh)_copy" }
}
