/** A command's error reply, a subscription refused or ended by the server, or a local failure. */
export class NatsedgeError extends Error {
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
  }
}
