import ArgumentParser
import Foundation
import PortcullisCore
import PortcullisPool

struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status", abstract: "Show the master, its workers (state, requests, RSS), the generation and the rate table.")

    @OptionGroup var options: ConfigOption
    @Flag(help: "Print the report as JSON.") var json = false
    @Option(name: .customLong("expiry-warning-days"), help: "List API keys that expire within this many days.")
    var expiryWarningDays: Int = APIKeyExpiry.defaultWarningDays

    func run() throws {
        guard let report = StatusReport(paths: MasterControl(configPath: options.config).paths, keyWarningDays: expiryWarningDays) else {
            print(json ? "{\"running\":false}" : "not running")
            throw ExitCode(3)
        }
        print(json ? JSONCodec.serialize(.object(report.document)) : report.text)
    }
}
