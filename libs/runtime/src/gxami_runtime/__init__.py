"""What every gxami service needs: settings, the aiokafka layer, logging, metrics and health."""
