/** Service URLs for tests: loopback services by default, overridable for other machines. */
export const testEnv = {
  postgresUrl: process.env.TEST_POSTGRES_URL ?? "postgres://postgres@127.0.0.1:5432/postgres",
  redisUrl: process.env.TEST_REDIS_URL ?? "redis://127.0.0.1:6379",
  natsUrl: process.env.TEST_NATS_URL ?? "nats://127.0.0.1:4222",
};

/** A short random suffix that isolates one test run's database, key prefix and bucket names. */
export function runId(): string {
  return `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`;
}
