/** The Hono environment shared by the app and its route groups. */
import type { HttpBindings } from '@hono/node-server';
import type { Identity } from '../hub/access-policy.js';
import type { RequestLogFields } from './request-log.js';

export interface AppVariables extends RequestLogFields {
  /** Who this request asks upstream as (see access.ts); its credentials are never logged. */
  identity: Identity;
}

export type AppEnv = { Bindings: HttpBindings; Variables: AppVariables };
