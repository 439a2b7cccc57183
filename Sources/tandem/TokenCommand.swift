import ArgumentParser
import Foundation
import TandemServer

struct TokenCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "token", abstract: "Print a join token.")

    @Option(help: "Session id the token admits to.")
    var session: String
    @Option(help: "Participant identity (the token's sub).")
    var identity: String
    @Option(help: "Display name.")
    var name: String?
    @Option(help: "Lifetime in seconds.")
    var ttl = 3600
    @Option(help: "Signing secret (default TANDEM_SECRET).")
    var secret: String?

    func run() async throws {
        guard let secret = secret ?? ProcessInfo.processInfo.environment["TANDEM_SECRET"] else {
            throw SetupError("give --secret or TANDEM_SECRET: the same secret the server verifies with")
        }
        try ConfigLoader.checkSecret(secret, name: "secret")
        guard (1...7 * 86400).contains(ttl) else { throw SetupError("--ttl must be from 1 to 604800 seconds") }
        guard !identity.isEmpty else { throw SetupError("--identity must not be empty") }
        let expires = Int64(Date().timeIntervalSince1970) + Int64(ttl)
        print(JoinTokens(secret: secret).sign(JoinClaims(identity: identity, session: session, name: name, expiresAt: expires)))
    }
}
