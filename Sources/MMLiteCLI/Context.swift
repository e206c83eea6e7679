import MMLiteCore

/// Test hooks: `afterStep` is called by apply after each statement it ran,
/// `afterPhase` by join after each numbered phase.
public struct Hooks: Sendable {
    public var afterStep: (@Sendable (_ index: Int, _ step: Step) -> Void)?
    public var afterPhase: (@Sendable (_ number: Int, _ title: String) -> Void)?
    public init(afterStep: (@Sendable (Int, Step) -> Void)? = nil, afterPhase: (@Sendable (Int, String) -> Void)? = nil) {
        self.afterStep = afterStep
        self.afterPhase = afterPhase
    }
}

public struct Context {
    public var console: Console
    public var hooks: Hooks
    public init(console: Console, hooks: Hooks = Hooks()) {
        self.console = console
        self.hooks = hooks
    }
}
