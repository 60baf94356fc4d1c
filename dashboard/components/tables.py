"""Every table is a DataFrame a user can download as CSV."""

from __future__ import annotations

import pandas as pd
import streamlit as st


def show_table(df: pd.DataFrame, key: str, file_name: str | None = None, **dataframe_kwargs) -> None:
    """st.dataframe plus a "Download CSV" button for exactly the rows shown."""
    st.dataframe(df, **dataframe_kwargs)
    st.download_button(
        "Download CSV",
        data=df.to_csv(index=not isinstance(df.index, pd.RangeIndex)).encode("utf-8"),
        file_name=file_name or f"{key}.csv",
        mime="text/csv",
        key=f"csv_{key}",
    )
