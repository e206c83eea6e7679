import MMLiteCore

/// Test hooks: called by apply after each statement it ran.
public struct Hooks: Sendable {
    public var afterStep: (@Sendable (_ index: Int, _ step: Step) -> Void)?
    public init(afterStep: (@Sendable (Int, Step) -> Void)? = nil) {
        self.afterStep = afterStep
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
