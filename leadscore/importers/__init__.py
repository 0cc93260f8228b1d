"""Importers: map CRM exports (HubSpot, Salesforce) onto the five CRM tables."""
