export * from './support/shared.js';
