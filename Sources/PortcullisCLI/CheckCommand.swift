import ArgumentParser
import PortcullisCore

struct CheckCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check", abstract: "Validate the configuration (and plugin rules); print every error.")

    @OptionGroup var options: ConfigOption

    func run() throws {
        do {
            let config = try GatewayValidation.validate(configPath: options.config)
            print("\(options.config): ok (\(config.routes.count) routes, \(config.upstreams.count) upstreams)")
        } catch {
            printError(error.description)
            throw ExitCode(1)
        }
    }
}
