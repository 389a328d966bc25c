/** The Hono environment shared by the app and its route groups. */
import type { HttpBindings } from '@hono/node-server';
import type { RequestLogFields } from './request-log.js';

export interface AppVariables extends RequestLogFields {
  /** The credentials to use upstream for this request (see access.ts); never logged. */
  upstreamAuth: string | undefined;
}

export type AppEnv = { Bindings: HttpBindings; Variables: AppVariables };
