import ArgumentParser
import TandemServer

struct SettingsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "settings",
        abstract: "Print every setting of serve: as help text, as the README's tables or as an example config file.")

    enum Format: String, EnumerableFlag {
        case text, markdown, jsonc
    }

    @Flag(help: "text (as serve --help), markdown (the README's tables) or jsonc (deploy/tandem.jsonc).")
    var format: Format = .text

    func run() {
        switch format {
        case .text: print(Setting.helpText())
        case .markdown: print(Setting.markdown(), terminator: "")
        case .jsonc: print(Setting.exampleFile(), terminator: "")
        }
    }
}
