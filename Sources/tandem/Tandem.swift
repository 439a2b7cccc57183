import ArgumentParser

@main
struct Tandem: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Signaling, provider arbitration and media fallback for two-party calls.",
        subcommands: [ServeCommand.self, CertsCommand.self, TokenCommand.self])
}
