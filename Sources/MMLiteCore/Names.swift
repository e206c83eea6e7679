/// The names of the objects mmlite creates (see docs/objects.md).
public struct ObjectNames: Sendable, Equatable {
    /// PostgreSQL truncates names to NAMEDATALEN - 1 = 63 bytes.
    public static let maximumLength = 63

    public var mesh: String
    public init(mesh: String) { self.mesh = mesh }

    /// The publication, same name on every node.
    public var publication: String { "mmlite_\(mesh)" }

    /// On publisher P, the slot that subscriber S reads.
    public func slot(subscriber: String) -> String { "mmlite_\(mesh)_\(subscriber)" }

    /// On subscriber S, the subscription that reads from publisher P.
    public func subscription(publisher: String) -> String { "mmlite_\(mesh)_from_\(publisher)" }

    /// Prefix shared by this mesh's slots and subscriptions.
    public var prefix: String { "mmlite_\(mesh)_" }

    /// The subscriber a slot name belongs to, if it is one of this mesh's.
    public func subscriber(ofSlot name: String) -> String? {
        guard name.hasPrefix(prefix) else { return nil }
        let rest = String(name.dropFirst(prefix.count))
        return rest.isEmpty || rest.hasPrefix("from_") ? nil : rest
    }

    /// The publisher a subscription name reads from, if it is one of this mesh's.
    public func publisher(ofSubscription name: String) -> String? {
        guard name.hasPrefix(prefix + "from_") else { return nil }
        let rest = String(name.dropFirst(prefix.count + 5))
        return rest.isEmpty ? nil : rest
    }
}
