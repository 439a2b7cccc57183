import ArgumentParser
import Foundation

@main
struct Tandem: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Signaling, provider arbitration and media fallback for two-party calls.",
        subcommands: [ServeCommand.self, CertsCommand.self, TokenCommand.self])

    /// Parse errors are said in one line (`--help` still prints the whole help).
    static func main() async {
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch let code as ExitCode {
            Foundation.exit(code.rawValue)
        } catch {
            let code = exitCode(for: error)
            if code == .success {
                print(fullMessage(for: error))
            } else {
                FileHandle.standardError.write(Data("tandem: \(message(for: error)) (see tandem --help)\n".utf8))
            }
            Foundation.exit(code.rawValue)
        }
    }
}
