import Foundation
import MMLiteCLI

let status = runMMLite(Array(CommandLine.arguments.dropFirst()), context: Context(console: Console.standard()))
exit(status)
