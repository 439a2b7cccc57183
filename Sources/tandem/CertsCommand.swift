import ArgumentParser
import TandemServer

struct CertsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "certs", abstract: "Make certificates.", subcommands: [Dev.self])

    struct Dev: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make a local CA and a server certificate for localhost, 127.0.0.1 and ::1.")

        @Option(help: "Directory to write ca.pem, ca-key.pem, server.pem and server-key.pem to.")
        var out = "./data/certs"

        func run() async throws {
            try DevCertificates.make(in: out)
            print("wrote \(out)/ca.pem, \(out)/server.pem and their keys; trust ca.pem in your browser or client")
        }
    }
}
