import ArgumentParser
import Foundation

@main
struct Tandem: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Signaling, provider arbitration and media fallback for two-party calls.",
        subcommands: [ServeCommand.self, SettingsCommand.self, CertsCommand.self, TokenCommand.self, DailyStandInCommand.self])

    /// Errors are said in one line: a usage error with a pointer to the help (`--help` still prints
    /// the whole help), a failure while running (bad settings, a port in use) as it is.
    static func main() async {
        var command: any ParsableCommand
        do {
            command = try parseAsRoot()
        } catch {
            let code = exitCode(for: error)
            if code == .success {
                print(fullMessage(for: error))
            } else {
                FileHandle.standardError.write(Data("tandem: \(message(for: error)) (see tandem --help)\n".utf8))
            }
            Foundation.exit(code.rawValue)
        }
        do {
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch let code as ExitCode {
            Foundation.exit(code.rawValue)
        } catch where exitCode(for: error) == .success {
            print(fullMessage(for: error))  // --help and friends end up here
            Foundation.exit(0)
        } catch {
            FileHandle.standardError.write(Data("tandem: \(error)\n".utf8))
            Foundation.exit(1)
        }
    }
}
