import ArgumentParser
import Foundation
import PortcullisPool

struct StopCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stop", abstract: "Stop the running gateway gracefully (in-flight requests finish), or --fast.")

    @OptionGroup var options: ConfigOption
    @Option(help: "Seconds to wait for the master to exit.") var wait: Int = 60
    @Flag(help: "Fast stop (SIGQUIT): workers exit at once, in-flight requests are cut.") var fast = false

    func run() throws {
        do {
            let pid = try MasterControl(configPath: options.config).stop(fast: fast, timeout: .seconds(wait))
            print("stopped master \(pid)")
        } catch {
            throw error.exit()
        }
    }
}
